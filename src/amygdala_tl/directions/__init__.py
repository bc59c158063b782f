"""Direction methods: each maps pooled activations and concept membership to unit directions."""
