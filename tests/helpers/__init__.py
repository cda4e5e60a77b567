"""Test helpers: tiny real GGUF models, package sources, loopback HTTP servers, training kits."""
