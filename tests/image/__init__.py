"""Tests of the built image and of docker compose up (make image-test): see conftest.py."""
