"""twin.mesh"""
