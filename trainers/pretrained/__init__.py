"""Pretrained towers: named offline sources (`sources`), their composition into an XModal model
(`compose`), the CTranslate2 Whisper converter (`convert_whisper_ct2`) and the Whisper window
(`whisper_window`)."""
