"""twin.terrain"""
