"""HL7 v2 over MLLP: the hospital gateway (transport in ``mllp``/``gateway``, mapping to FHIR in
``mapping``/``handlers``). ``contract`` is the small interface between the two halves."""
