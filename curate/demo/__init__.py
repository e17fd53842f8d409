"""The bundled demo: a generated web of image-caption pages with planted problems, and a runner."""
