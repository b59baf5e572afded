def cases(scratch):
    return []
