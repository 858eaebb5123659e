"""twin.synth"""
