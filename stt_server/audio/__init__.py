"""Audio: probing and decoding, chunk planning at silences, the pipeline, merging, transcripts and their formats, languages."""
