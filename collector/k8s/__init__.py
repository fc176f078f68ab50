"""Kubernetes enrichment from the API server: this node's pods (labels, annotations, images, owning
workload) watched with the official client, on top of collector/container.py's on-node resolution."""
