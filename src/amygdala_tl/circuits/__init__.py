"""Head-level circuit probing: detectors over attention patterns, ablations, concept circuits."""
