"""Example models beside the mock model: `python -m worker --model example_models.hounsfield`."""
