"""Named DIMSE status codes the node returns (PS3.4 Annex B.2.3, PS3.7 Annex C).

Never a bare hex value elsewhere in the code: handlers return one of these.
"""

from __future__ import annotations

SUCCESS = 0x0000

# C-STORE failures (PS3.4 Table B.2-1)
REFUSED_OUT_OF_RESOURCES = 0xA700
ERROR_DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
ERROR_CANNOT_UNDERSTAND = 0xC000
# General failure (PS3.7 C.4): used when our own storage fails for a reason other than space.
PROCESSING_FAILURE = 0x0110

DESCRIPTIONS = {
    SUCCESS: "Success",
    REFUSED_OUT_OF_RESOURCES: "Refused: Out of Resources",
    ERROR_DATASET_DOES_NOT_MATCH_SOP_CLASS: "Error: Data Set does not match SOP Class",
    ERROR_CANNOT_UNDERSTAND: "Error: Cannot understand",
    PROCESSING_FAILURE: "Failure: Processing failure",
}
