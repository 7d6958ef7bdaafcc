from django.urls import path

from . import views

urlpatterns = [
    path('', views.index, name='index'),
    path('healthz/', views.healthz, name='healthz'),
    path('items/', views.create_item, name='create-item'),
    path('slow/', views.slow, name='slow'),
    path('env-check/', views.env_check, name='env-check'),
]
