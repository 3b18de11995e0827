"""Runner hooks (visualisation hook lives in mmrefer.visualization)."""
