"""Task modules the tests load into worker processes."""
