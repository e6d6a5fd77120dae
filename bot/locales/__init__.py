"""Gettext catalogs (``<lang>/LC_MESSAGES/messages.po``) and the script that keeps them in step
with the code: ``python -m bot.locales.update_catalogs``."""
