from django.db import models


class Item(models.Model):
    name = models.CharField(max_length=100)
    created = models.DateTimeField(auto_now_add=True)
    # v2: an expand-only change. Nullable, so v1's code (which never writes it) keeps working on the migrated
    # table while the fleet runs both releases.
    note = models.CharField(max_length=200, null=True, blank=True)

    def __str__(self):
        return self.name
