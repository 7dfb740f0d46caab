"""Pruning methods, one module each: ASLP Gumbel-softmax extraction (`gumbel`), its baselines
(`edgepopup`, `supermask`), budget-aware reparametrization (`reparam`) and its magnitude baseline
(`magnitude`), joint search-and-training filter pruning (`joint`), and physical removal of pruned
filters (`shrink`). See ../shared/METHODS.md."""
