import os

from django.core.wsgi import get_wsgi_application

from billing.payments import refuse_unsafe_provider

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "billing.settings")
refuse_unsafe_provider()  # the free test checkout is served with DEBUG off only when asked for
application = get_wsgi_application()
