"""The Celery worker: adapts dlmodels training to the database and MLflow."""
