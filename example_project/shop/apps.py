from django.apps import AppConfig


class ShopConfig(AppConfig):
    name = "example_project.shop"
    label = "shop"
    verbose_name = "Example shop"

    def ready(self) -> None:
        # The shop's Celery app is the current app in every process (web and worker).
        import example_project.celery  # noqa: F401
        from django_stability.brownout import register_feature

        # Recommendations are worth showing, not worth a thread while the site sheds:
        # declared so that the feature-switch admin lists it.
        register_feature("recommendations", brownout=True)
