"""The shop's views. Every answer names the release that served it (shop/release.py), so a load test can tell
which release answered what; none of them shows a value of the environment, only hashes."""

import hashlib
import os
import time

from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from shop.release import RELEASE

from .models import Item

SLOW_LIMIT_SECONDS = 30.0


def _sha256(value):
    return None if value is None else hashlib.sha256(value.encode()).hexdigest()


@require_GET
def healthz(request):
    """The deploy's health gate: no database, so it judges the app server and the release's code alone."""
    return HttpResponse(f'ok {RELEASE}', content_type='text/plain')


@require_GET
def index(request):
    """A page that reads the database and names the release's stylesheet (its hashed name, from the manifest)."""
    # v2 reads the column its migration 0002 added.
    latest_note = Item.objects.exclude(note=None).order_by('-id').values_list('note', flat=True).first()
    context = {'release': RELEASE, 'pid': os.getpid(), 'count': Item.objects.count(), 'latest_note': latest_note}
    return render(request, 'items/index.html', context)


@csrf_exempt
@require_POST
def create_item(request):
    # v2 writes the column its migration 0002 added.
    note = request.POST.get('note') or f'added by {RELEASE}'
    item = Item.objects.create(name=request.POST.get('name', 'item')[:100], note=note[:200])
    return JsonResponse({'id': item.id, 'note': item.note, 'release': RELEASE, 'pid': os.getpid()}, status=201)


@require_GET
def slow(request):
    """Answers after ?s= seconds: keeps requests in flight while a deploy replaces workers."""
    try:
        seconds = min(max(float(request.GET.get('s', '1')), 0.0), SLOW_LIMIT_SECONDS)
    except ValueError:
        return HttpResponse('s must be a number', status=400, content_type='text/plain')
    time.sleep(seconds)
    return JsonResponse({'release': RELEASE, 'pid': os.getpid(), 'slept': seconds})


@require_GET
def env_check(request):
    """Proof that the environment reached this worker intact, quoting included: hashes, never the values."""
    greeting = os.environ.get('SHOP_GREETING')
    return JsonResponse({
        'release': RELEASE,
        'pid': os.getpid(),
        'greeting_sha256': _sha256(greeting),
        'greeting_length': None if greeting is None else len(greeting),
        'secret_sha256': _sha256(settings.SECRET_KEY),
    })
