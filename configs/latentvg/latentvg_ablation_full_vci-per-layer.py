# Ablation: the full model with one concept bank per encoder layer instead of one shared bank.
# The supplementary (C.3) says the visual concept injector adds ~1M parameters for its concept
# tokens: 12 banks of 100 x 768 give 0.92M, the shared bank (the default, after the LEAD port's
# account of the released code) 0.08M. RefCOCO+ training, as the other ablations.
_base_ = ['./latentvg_ablation_full.py']
model = dict(concept_injector=dict(num_banks=12))
