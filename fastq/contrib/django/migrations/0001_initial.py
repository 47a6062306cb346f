"""Creates ``fastq_taskresult``, the table of the ``django-db://`` result backend."""

from django.db import migrations, models


class Migration(migrations.Migration):

    initial = True

    dependencies = []

    operations = [
        migrations.CreateModel(
            name="TaskResult",
            fields=[
                ("task_id", models.CharField(max_length=255, primary_key=True, serialize=False,
                                             verbose_name="task id")),
                ("state", models.CharField(max_length=50)),
                ("document", models.TextField(help_text="the meta document, JSON")),
                ("date_done", models.DateTimeField(blank=True, null=True,
                                                   verbose_name="done at")),
                ("expires", models.DateTimeField(blank=True, db_index=True, null=True,
                                                 help_text="empty: kept until forgotten")),
                ("name", models.CharField(blank=True, max_length=255, null=True,
                                          verbose_name="task name")),
                ("args", models.TextField(blank=True, null=True,
                                          help_text="positional arguments, JSON")),
                ("kwargs", models.TextField(blank=True, null=True,
                                            help_text="keyword arguments, JSON")),
                ("worker", models.CharField(blank=True, max_length=255, null=True)),
            ],
            options={
                "verbose_name": "task result",
                "verbose_name_plural": "task results",
                "db_table": "fastq_taskresult",
            },
        ),
    ]
