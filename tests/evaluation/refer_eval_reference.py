"""Independent per-sample loop transcriptions of the reference evaluation scripts.

Written from the published arithmetic (LAVT/DMMI ``test.py``, ReLA ``refer_evaluation.py`` after
its 2023-08-26 fix) as plain Python loops, to cross-check the vectorised mmrefer functions.
"""
import numpy as np


def _iu(pred, gt):
    pred, gt = np.asarray(pred) != 0, np.asarray(gt) != 0
    return int(np.logical_and(pred, gt).sum()), int(np.logical_or(pred, gt).sum())


def _iou_loop(preds, gts, thresholds=(0.5, 0.6, 0.7, 0.8, 0.9)):
    """The per-sample loop of LAVT's / DMMI's test.py: cumulative I and U, the IoUs and the
    number of samples with IoU >= t."""
    cum_i = cum_u = 0
    ious, correct = [], {t: 0 for t in thresholds}
    for p, g in zip(preds, gts):
        i, u = _iu(p, g)
        iou = 0.0 if u == 0 else i * 1.0 / u
        ious.append(iou)
        cum_i += i
        cum_u += u
        for t in correct:
            correct[t] += iou >= t
    return cum_i, cum_u, ious, correct


def _div(a, b):
    return a / b if b else float('nan')


def lavt_reference(preds, gts):
    cum_i, cum_u, ious, correct = _iou_loop(preds, gts)
    out = dict(mIoU=np.mean(np.array(ious)) * 100., oIoU=_div(cum_i * 100., cum_u))
    out.update({f'Pr@{t:.1f}': c * 100. / len(ious) for t, c in correct.items()})
    return out


def rela_reference(preds, gts, pred_nt, gt_nt):
    """ReLA arithmetic; N-acc/T-acc returned as percent; divisions by zero -> nan."""
    acc_i = acc_u = 0
    acc_iou = 0
    tp = tn = fp = fn = 0
    n_total = n_target = n_empty = 0
    correct = {t: 0 for t in (0.7, 0.8, 0.9)}
    for p, g, pn, gn in zip(preds, gts, pred_nt, gt_nt):
        i, u = _iu(p, g)
        if gn:
            n_empty += 1
            if pn:
                tp += 1
                acc_iou += 1
            else:
                fn += 1
                acc_u += u
        else:
            if pn:
                fp += 1
                i = 0
            else:
                tn += 1
            iou = 0.0 if u == 0 else float(i) / float(u)
            acc_iou += iou
            acc_i += i
            acc_u += u
            n_target += 1
            for t in correct:
                correct[t] += iou >= t
        n_total += 1

    out = dict(gIoU=100. * (acc_iou / n_total), cIoU=_div(acc_i * 100., acc_u))
    if n_empty > 0:
        out['T-acc'] = _div(tn * 100., tn + fp)
        out['N-acc'] = _div(tp * 100., tp + fn)
    else:
        out['T-acc'] = out['N-acc'] = 0.0
    out.update({f'Pr@{t:.1f}': _div(c * 100., n_target) for t, c in correct.items()})
    return out


def rela_per_sample(preds, gts, pred_nt, gt_nt):
    """ReLA's detailed per-sample results: the effective ``I``, ``U`` and ``IoU`` each sample
    adds to the sums above, and the outcome of its no-target decision."""
    rows = []
    for p, g, pn, gn in zip(preds, gts, pred_nt, gt_nt):
        i, u = _iu(p, g)
        if gn and pn:
            rows.append(dict(I=0, U=0, IoU=1.0, outcome='TP'))
        elif gn:
            rows.append(dict(I=0, U=u, IoU=0.0, outcome='FN'))
        else:
            i = 0 if pn else i
            rows.append(dict(I=i, U=u, IoU=0.0 if u == 0 else float(i) / float(u),
                             outcome='FP' if pn else 'TN'))
    return rows


def dmmi_reference(preds, gts, is_zero):
    accs = [1 if np.sum(np.asarray(p) != 0) == 0 else 0 for p, z in zip(preds, is_zero) if z]
    cum_i, cum_u, ious, correct = _iou_loop([p for p, z in zip(preds, is_zero) if not z],
                                            [g for g, z in zip(gts, is_zero) if not z])
    out = dict(oIoU=_div(cum_i * 100., cum_u),
               mIoU=np.mean(np.array(ious)) * 100. if ious else float('nan'),
               Acc=np.mean(np.array(accs)) * 100. if accs else float('nan'))
    out.update({f'Pr@{t:.1f}': _div(c * 100., len(ious)) for t, c in correct.items()})
    return out


def assert_same(actual: dict, expected: dict, rel=1e-12):
    assert set(actual) == set(expected), (sorted(actual), sorted(expected))
    for k, v in expected.items():
        a = actual[k]
        assert isinstance(a, float), (k, type(a))
        if np.isnan(v):
            assert np.isnan(a), (k, a)
        else:
            assert abs(a - v) <= rel * max(1.0, abs(v)), (k, a, v)
