"""SIE inference: the model catalogue, a batched and cached client, and a local server."""
