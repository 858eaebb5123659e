"""twin.sync"""
