from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("web", "0001_initial")]

    operations = [
        migrations.AddField(model_name="accessrequest", name="purpose",
                            field=models.CharField(choices=[("view", "view"), ("export", "export")], default="view",
                                                   max_length=8)),
        migrations.AddField(model_name="accessrequest", name="range_start", field=models.FloatField(null=True)),
        migrations.AddField(model_name="accessrequest", name="range_end", field=models.FloatField(null=True)),
    ]
