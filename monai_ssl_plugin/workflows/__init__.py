"""End-to-end jobs composed from the layers below (the README's main job lives here)."""
