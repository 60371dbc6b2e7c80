"""Real training and validation epochs: the trainer, the datasets it reads (offline), the study's
recipe, and the epoch records the store keeps (readable without torch)."""
