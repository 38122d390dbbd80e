"""Fine-tuning an encoder on labelled products: the (product, category) pairs and the trainer."""
