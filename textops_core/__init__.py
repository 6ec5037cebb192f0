"""What the pipeline and the service share: inference on every serving variant, the model
registry (the BentoML model store), the prediction log's files, the rollout's state, and the
parsing of settings. `assets/` and `orchestration/` build and approve models with it; `bento/`
serves them with it."""
