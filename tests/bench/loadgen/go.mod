module auditlog/loadgen

go 1.26.8
