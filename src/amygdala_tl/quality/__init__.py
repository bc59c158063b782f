"""How good is each direction: geometry metrics, held-out evaluation, and the HTML report."""
