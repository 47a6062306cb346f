"""The project's routes: the sums app's two views."""

from django.urls import path
from sums import views

urlpatterns = [
    path("sums", views.send_sum),
    path("sums/<str:task_id>", views.read_sum),
]
