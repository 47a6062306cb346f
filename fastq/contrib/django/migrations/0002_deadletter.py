"""Creates ``fastq_deadletter``, the admin's mirror of the broker's dead letters."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [("fastq", "0001_initial")]

    operations = [
        migrations.CreateModel(
            name="DeadLetter",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("queue", models.CharField(max_length=255)),
                ("task_id", models.CharField(max_length=255, verbose_name="task id")),
                ("task_name", models.CharField(blank=True, max_length=255,
                                               verbose_name="task name")),
                ("reason", models.CharField(max_length=255)),
                ("dead_lettered_at", models.DateTimeField(blank=True, null=True,
                                                          verbose_name="dead-lettered at")),
                ("deliveries", models.PositiveIntegerField(
                    default=1, help_text="times it was delivered")),
                ("args", models.TextField(blank=True, help_text="the argsrepr header")),
                ("kwargs", models.TextField(blank=True, help_text="the kwargsrepr header")),
            ],
            options={
                "verbose_name": "dead letter",
                "verbose_name_plural": "dead letters",
                "db_table": "fastq_deadletter",
                "ordering": ("-dead_lettered_at",),
            },
        ),
    ]
