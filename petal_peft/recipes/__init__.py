"""Recipes that build petal-peft's base models from scratch (run offline, once; the results ship or are cached).

* :mod:`petal_peft.recipes.synthetic_base`: the small face ViT trained on procedural synthetic identities, shipped
  in ``petal_peft/zoo/weights/`` and loaded by :func:`petal_peft.zoo.get_pretrained_base`;
* :mod:`petal_peft.recipes.real_base`: a face transformer distilled from dlib's ResNet on real face photos
  (``benchmarks/build_real_base.py`` runs it);
* :mod:`petal_peft.recipes.common`: the learning-rate schedule and deterministic context both use.
"""
