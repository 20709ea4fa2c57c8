"""tfprune: pruning for tf_keras models."""
