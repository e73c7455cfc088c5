"""HL7 v2 field names for the segments the message viewer labels, as a data table.

Names follow HL7 v2.5.1, with the fields that later versions (up to 2.7) appended
at the end of a segment. The table was generated once from hl7apy's structure
definitions (``hl7apy.v2_5_1.segments`` then ``hl7apy.v2_7.segments``; long names
title-cased, the segment suffix of "Set ID - PID" dropped) and is kept as plain data
so that a reviewer can read it; ``tests/unit/test_admin_hl7view.py`` checks it
against hl7apy.
"""

from __future__ import annotations

FIELD_NAMES: dict[str, tuple[str, ...]] = {
    "MSH": (
        "Field Separator", "Encoding Characters", "Sending Application", "Sending Facility",
        "Receiving Application", "Receiving Facility", "Date Time of Message", "Security",
        "Message Type", "Message Control ID", "Processing ID", "Version ID", "Sequence Number",
        "Continuation Pointer", "Accept Acknowledgment Type", "Application Acknowledgment Type",
        "Country Code", "Character Set", "Principal Language of Message",
        "Alternate Character Set Handling Scheme", "Message Profile Identifier",
        "Sending Responsible Organization", "Receiving Responsible Organization",
        "Sending Network Address", "Receiving Network Address",
    ),
    "EVN": (
        "Event Type Code", "Recorded Date Time", "Date Time Planned Event", "Event Reason Code",
        "Operator ID", "Event Occurred", "Event Facility",
    ),
    "PID": (
        "Set ID", "Patient ID", "Patient Identifier List", "Alternate Patient ID", "Patient Name",
        "Mother's Maiden Name", "Date Time of Birth", "Administrative Sex", "Patient Alias",
        "Race", "Patient Address", "County Code", "Phone Number Home", "Phone Number Business",
        "Primary Language", "Marital Status", "Religion", "Patient Account Number",
        "SSN Number Patient", "Driver's License Number Patient", "Mother's Identifier",
        "Ethnic Group", "Birth Place", "Multiple Birth Indicator", "Birth Order", "Citizenship",
        "Veterans Military Status", "Nationality", "Patient Death Date and Time",
        "Patient Death Indicator", "Identity Unknown Indicator", "Identity Reliability Code",
        "Last Update Date Time", "Last Update Facility", "Species Code", "Breed Code", "Strain",
        "Production Class Code", "Tribal Citizenship", "Patient Telecommunication Information",
    ),
    "MRG": (
        "Prior Patient Identifier List", "Prior Alternate Patient ID",
        "Prior Patient Account Number", "Prior Patient ID", "Prior Visit Number",
        "Prior Alternate Visit ID", "Prior Patient Name",
    ),
    "PV1": (
        "Set ID", "Patient Class", "Assigned Patient Location", "Admission Type",
        "Preadmit Number", "Prior Patient Location", "Attending Doctor", "Referring Doctor",
        "Consulting Doctor", "Hospital Service", "Temporary Location", "Preadmit Test Indicator",
        "Re-admission Indicator", "Admit Source", "Ambulatory Status", "VIP Indicator",
        "Admitting Doctor", "Patient Type", "Visit Number", "Financial Class",
        "Charge Price Indicator", "Courtesy Code", "Credit Rating", "Contract Code",
        "Contract Effective Date", "Contract Amount", "Contract Period", "Interest Code",
        "Transfer to Bad Debt Code", "Transfer to Bad Debt Date", "Bad Debt Agency Code",
        "Bad Debt Transfer Amount", "Bad Debt Recovery Amount", "Delete Account Indicator",
        "Delete Account Date", "Discharge Disposition", "Discharged to Location", "Diet Type",
        "Servicing Facility", "Bed Status", "Account Status", "Pending Location",
        "Prior Temporary Location", "Admit Date Time", "Discharge Date Time",
        "Current Patient Balance", "Total Charges", "Total Adjustments", "Total Payments",
        "Alternate Visit ID", "Visit Indicator", "Other Healthcare Provider",
        "Service Episode Identifier",
    ),
    "ORC": (
        "Order Control", "Placer Order Number", "Filler Order Number", "Placer Group Number",
        "Order Status", "Response Flag", "Quantity Timing", "Parent", "Date Time of Transaction",
        "Entered by", "Verified by", "Ordering Provider", "Enterer's Location",
        "Call Back Phone Number", "Order Effective Date Time", "Order Control Code Reason",
        "Entering Organization", "Entering Device", "Action by",
        "Advanced Beneficiary Notice Code", "Ordering Facility Name", "Ordering Facility Address",
        "Ordering Facility Phone Number", "Ordering Provider Address", "Order Status Modifier",
        "Advanced Beneficiary Notice Override Reason", "Filler's Expected Availability Date Time",
        "Confidentiality Code", "Order Type", "Enterer Authorization Mode",
        "Parent Universal Service Identifier", "Advanced Beneficiary Notice Date",
        "Alternate Placer Order Number",
    ),
    "OBR": (
        "Set ID", "Placer Order Number", "Filler Order Number", "Universal Service Identifier",
        "Priority", "Requested Date Time", "Observation Date Time", "Observation End Date Time",
        "Collection Volume", "Collector Identifier", "Specimen Action Code", "Danger Code",
        "Relevant Clinical Information", "Specimen Received Date Time", "Specimen Source",
        "Ordering Provider", "Order Callback Phone Number", "Placer Field 1", "Placer Field 2",
        "Filler Field 1", "Filler Field 2", "Results Rpt Status Chng Date Time",
        "Charge to Practice", "Diagnostic Serv Sect ID", "Result Status", "Parent Result",
        "Quantity Timing", "Result Copies to", "Parent", "Transportation Mode",
        "Reason for Study", "Principal Result Interpreter", "Assistant Result Interpreter",
        "Technician", "Transcriptionist", "Scheduled Date Time", "Number of Sample Containers",
        "Transport Logistics of Collected Sample", "Collector's Comment",
        "Transport Arrangement Responsibility", "Transport Arranged", "Escort Required",
        "Planned Patient Transport Comment", "Procedure Code", "Procedure Code Modifier",
        "Placer Supplemental Service Information", "Filler Supplemental Service Information",
        "Medically Necessary Duplicate Procedure Reason", "Result Handling",
        "Parent Universal Service Identifier", "Observation Group ID",
        "Parent Observation Group ID", "Alternate Placer Order Number", "Parent Order",
    ),
    "TQ1": (
        "Set ID", "Quantity", "Repeat Pattern", "Explicit Time", "Relative Time and Units",
        "Service Duration", "Start Date Time", "End Date Time", "Priority", "Condition Text",
        "Text Instruction", "Conjunction", "Occurrence Duration", "Total Occurrence S",
    ),
    "IPC": (
        "Accession Identifier", "Requested Procedure ID", "Study Instance UID",
        "Scheduled Procedure Step ID", "Modality", "Protocol Code", "Scheduled Station Name",
        "Scheduled Procedure Step Location", "Scheduled Ae Title",
    ),
    "OBX": (
        "Set ID", "Value Type", "Observation Identifier", "Observation Sub ID",
        "Observation Value", "Units", "References Range", "Abnormal Flags", "Probability",
        "Nature of Abnormal Test", "Observation Result Status",
        "Effective Date of Reference Range Values", "User Defined Access Checks",
        "Date Time of the Observation", "Producer's Reference", "Responsible Observer",
        "Observation Method", "Equipment Instance Identifier", "Date Time of the Analysis",
        "Performing Organization Name", "Performing Organization Address",
        "Performing Organization Medical Director", "Performing Organization Name",
        "Performing Organization Address", "Performing Organization Medical Director",
        "Patient Results Release Category",
    ),
    "NTE": (
        "Set ID", "Source of Comment", "Comment", "Comment Type", "Entered by",
        "Entered Date Time", "Effective Start Date", "Expiration Date",
    ),
    "MSA": (
        "Acknowledgment Code", "Message Control ID", "Text Message", "Expected Sequence Number",
        "Delayed Acknowledgment Type", "Error Condition", "Message Waiting Number",
        "Message Waiting Priority",
    ),
    "ERR": (
        "Error Code and Location", "Error Location", "HL7 Error Code", "Severity",
        "Application Error Code", "Application Error Parameter", "Diagnostic Information",
        "User Message", "Inform Person Indicator", "Override Type", "Override Reason Code",
        "Help Desk Contact Point",
    ),
}


def field_name(segment: str, index: int) -> str | None:
    """The name of field *index* (1-based) of *segment*, or None when not in the table."""
    names = FIELD_NAMES.get(segment)
    if names is None or not 1 <= index <= len(names):
        return None
    return names[index - 1]
