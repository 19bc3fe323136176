"""The sacral-tumour MONAI Deploy application (``python -m app -i INPUT -o OUTPUT -m MODELS``)."""
