"""Model-side code: architectures, losses, augmentations, TTA, optimizers and the training loop."""
