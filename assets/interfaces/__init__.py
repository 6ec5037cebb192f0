"""What assets use from the outside world, as interfaces: the artifact store, the experiment
tracker, the model registry, and the typed manifests assets pass to each other. Implementations
live in `orchestration/resources`; nothing here imports an asset."""
