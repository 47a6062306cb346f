"""What ``fastq worker -A tests.apps.flask_worker:fastq_app`` loads: the Flask app from its factory."""

from tests.apps.flask_app import create_app, fastq

flask_app = create_app()
fastq_app = fastq.fastq_app
