"""Dataset-scale experiments of DeepSAVA (Mu et al.) run as :mod:`core.jobs` tasks."""
