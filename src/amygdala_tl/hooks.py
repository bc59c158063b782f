"""TransformerLens hook and weight names, built in one place."""

RESID_POST = "blocks.{layer}.hook_resid_post"


def resid_post(layer: int) -> str:
    """Residual stream after block `layer` (= HF hidden_states[layer + 1] before the final norm)."""
    return RESID_POST.format(layer=layer)


def resid_pre(layer: int) -> str:
    """Residual stream entering block `layer` (= resid_post of block layer - 1, or the embeddings)."""
    return f"blocks.{layer}.hook_resid_pre"


def attn_z(layer: int) -> str:
    """Per-head attention output before W_O: [batch, pos, n_heads, d_head]."""
    return f"blocks.{layer}.attn.hook_z"


def attn_pattern(layer: int) -> str:
    """Attention probabilities: [batch, n_heads, query_pos, key_pos]."""
    return f"blocks.{layer}.attn.hook_pattern"


def layer_of(hook_name: str) -> int:
    """The block index in a `blocks.<l>....` hook name."""
    return int(hook_name.split(".")[1])
