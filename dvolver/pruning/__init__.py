"""Pruning methods, one module each: ASLP Gumbel-softmax extraction (`gumbel`), its baselines
(`edgepopup`, `supermask`), budget-aware reparametrization (`reparam`) and its magnitude baseline
(`magnitude`). See ../shared/METHODS.md sections 2 and 3."""
