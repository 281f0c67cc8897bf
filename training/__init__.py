"""slstt.training: leave-one-subject-out training (loso), frozen-feature cache (features), pooled
metrics (metrics), run reports (report), fold executors (executors; Ray in ray_executor) and the
`slstt train` command (cli). Submodules import torch lazily; importing this package is cheap."""
