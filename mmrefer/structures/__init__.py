from .rescale import box_to_input, box_to_original, mask_to_original

__all__ = ['mask_to_original', 'box_to_original', 'box_to_input']
