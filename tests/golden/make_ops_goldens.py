#!/usr/bin/env python3
"""Golden outputs of PyTorch for the backend ops whose meaning is PyTorch's (test_ops reads them).

Developer script (needs torch; CI never runs it, CI reads the JSON it writes):

  python3 tests/golden/make_ops_goldens.py      # writes tests/golden/ops/ops.json

Each case holds its inputs and PyTorch's float32 output, so the test checks the CPU backend's
op against the reference definition, not against another implementation of ours:

  * gelu_tanh:   torch.nn.functional.gelu(x, approximate="tanh"), moderate and large |x|;
  * softmax:     torch.softmax(x, dim=-1) per row, a row with a large offset among them;
  * conv3x3s2:   torch.nn.functional.conv2d(x, W, b, stride=2, padding=1) on an NCHW map; the
                 test runs im2col_3x3s2 on the channels-last map and a product with W viewed
                 as [Cout, Cin*9] (docs/MODEL.md, "Valley2");
  * avgpool:     torch.nn.functional.adaptive_avg_pool2d, with bins that overlap and shrinking
                 both ways.

Inputs come from torch.Generator seeds and are rounded to bf16 (so a bf16 backend reads the
same numbers); the map tensors are written channels-last, row-major over (y, x, c).
"""
import json
import os

import torch
import torch.nn.functional as F


def rnd(g, *shape, scale=1.0):
    x = (torch.rand(*shape, generator=g, dtype=torch.float32) * 2 - 1) * scale
    return x.to(torch.bfloat16).to(torch.float32)


def flat(t):
    # 9 significant digits: each float32 comes back exactly
    return [float("%.9g" % v) for v in t.reshape(-1).tolist()]


def main():
    g = torch.Generator().manual_seed(20261204)
    cases = []

    x = torch.cat([rnd(g, 61, scale=4.0), rnd(g, 37, scale=600.0),
                   torch.tensor([0.0, -0.0, 1e-3, -1e-3, 30.0, -30.0, 5000.0, -5000.0])])
    cases.append({"op": "gelu_tanh", "x": flat(x), "y": flat(F.gelu(x, approximate="tanh"))})

    for rows, dim, scale, offset in [(3, 50, 8.0, 0.0), (2, 1001, 30.0, 1000.0)]:
        x = (rnd(g, rows, dim, scale=scale) + offset).to(torch.bfloat16).to(torch.float32)
        cases.append({"op": "softmax", "rows": rows, "dim": dim, "x": flat(x),
                      "y": flat(torch.softmax(x, dim=-1))})

    for h, w, cin, cout in [(5, 7, 3, 4), (27, 27, 2, 3), (6, 4, 5, 2), (1, 1, 3, 2)]:
        x = rnd(g, 1, cin, h, w)
        wt = rnd(g, cout, cin, 3, 3, scale=0.5)
        b = rnd(g, cout, scale=0.5)
        y = F.conv2d(x, wt, b, stride=2, padding=1)
        oh, ow = y.shape[2], y.shape[3]
        cases.append({"op": "conv3x3s2", "h": h, "w": w, "cin": cin, "cout": cout,
                      "oh": oh, "ow": ow,
                      "x": flat(x[0].permute(1, 2, 0)), "w_": flat(wt), "b": flat(b),
                      "y": flat(y[0].permute(1, 2, 0))})

    for ih, iw, oh, ow, c in [(24, 42, 20, 35, 1), (5, 7, 3, 4, 3), (7, 5, 4, 3, 2),
                              (27, 27, 14, 14, 1), (4, 6, 4, 6, 1), (9, 3, 2, 5, 2)]:
        x = rnd(g, 1, c, ih, iw)
        y = F.adaptive_avg_pool2d(x, (oh, ow))
        cases.append({"op": "avgpool", "ih": ih, "iw": iw, "oh": oh, "ow": ow, "c": c,
                      "x": flat(x[0].permute(1, 2, 0)), "y": flat(y[0].permute(1, 2, 0))})

    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ops", "ops.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"torch": torch.__version__, "cases": cases}, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {out}: {len(cases)} cases, {os.path.getsize(out)} bytes")


if __name__ == "__main__":
    main()
