"""Deployment: converting official CrossVIS/AdelaiDet checkpoints, and exporting the network.

* :mod:`crossvis.deploy.convert` — official ``.pth``/``.pkl`` checkpoints to crossvis state dicts
  and recipes (``crossvis convert-checkpoint``);
* :mod:`crossvis.deploy.official_keys` — the official backbone/FPN key names;
* :mod:`crossvis.deploy.export` — ``torch.export`` / ONNX of the per-frame network (``crossvis export``).
"""
