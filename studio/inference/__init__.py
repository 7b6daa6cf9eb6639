"""Using a trained model: loading a run or a Hugging Face folder (load), generation, predictions, evaluation, and
the playground's model process."""
