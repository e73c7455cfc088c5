"""Every storage SOP class the C-STORE SCP offers, retired ones included.

pynetdicom's ``AllStoragePresentationContexts`` leaves out storable classes
that its own ``sop_class`` tables route elsewhere or not at all (the retired
Ultrasound Image Storage 1.2.840.10008.5.1.4.1.1.6, DICOS, Eddy Current, the
"- Trial" SR classes, ...), while STOW-RS takes any instance. The list here
is pynetdicom's, plus every SOP class in pydicom's UID dictionary whose name
ends in "Storage" (or "Storage - For Presentation / For Processing /
Trial"), except the Media Storage Directory (a DICOMDIR, never sent over
C-STORE).

An SCP may support any number of presentation contexts (the 128 limit of
PS3.8 binds what one association *requests*), so all of them are offered.
``register_storage_classes`` tells pynetdicom, through its public
``register_uid``, that the classes it does not know are handled by its
Storage Service, so their C-STORE requests reach our handler.
"""

from __future__ import annotations

import re

from pydicom._uid_dict import UID_dictionary
from pynetdicom import AllStoragePresentationContexts, register_uid
from pynetdicom.service_class import ServiceClass, StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class

_STORAGE_NAME = re.compile(r"Storage( - (For Presentation|For Processing|Trial))?$")
_NOT_SENT = frozenset({"1.2.840.10008.1.3.10"})  # Media Storage Directory Storage


def storage_sop_classes() -> list[str]:
    """Every storage SOP class UID: pynetdicom's list and pydicom's dictionary, sorted."""
    found = {str(cx.abstract_syntax) for cx in AllStoragePresentationContexts}
    for uid, (name, kind, *_rest) in UID_dictionary.items():
        if kind == "SOP Class" and _STORAGE_NAME.search(name) and uid not in _NOT_SENT:
            found.add(uid)
    return sorted(found)


def register_storage_classes() -> list[str]:
    """Route every storage class pynetdicom has no service for to its Storage Service.

    Idempotent; returns the UIDs it registered (empty once done)."""
    added = []
    for uid in storage_sop_classes():
        if uid_to_service_class(uid) is ServiceClass:
            keyword = UID_dictionary[uid][4] or f"Storage_{uid.replace('.', '_')}"
            register_uid(uid, keyword, StorageServiceClass)
            added.append(uid)
    return added
