"""The team's pages: under an organization (``org_urls``) and the invitation link."""

from django.urls import path

from team.views import audit, invitations, members

org_urls = [
    path("members/", members.members_page, name="members"),
    path("members/<int:membership_id>/role/", members.change_role, name="change_role"),
    path("members/<int:membership_id>/remove/", members.remove_member, name="remove_member"),
    path(
        "members/invitations/<int:invitation_id>/resend/",
        members.resend_invitation,
        name="resend_invitation",
    ),
    path(
        "members/invitations/<int:invitation_id>/revoke/",
        members.revoke_invitation,
        name="revoke_invitation",
    ),
    path("audit/", audit.audit_log, name="audit"),
    path("audit/export.csv", audit.audit_export, name="audit_export"),
]

urlpatterns = [
    path("invitations/<str:token>/", invitations.invitation, name="invitation"),
]
