# One PNG per saga-bench CSV (open-loop runs): throughput, in flight / backlog,
# start-ack and completion p95, message age p95 and sagad's CPU, per second.
# Usage: gnuplot -e "csv='run.csv'; png='run.png'; title='cap-400'" bench/plot.gp
set datafile separator ','
set datafile missing ''
set terminal pngcairo size 1200,1000 font ',9'
set output png
set key autotitle columnhead top left opaque
set grid
set xlabel 'second of the run'
set multiplot layout 4,1 title title font ',11'

set ylabel 'sagas / s'
plot csv using 1:3 with lines lw 2 title 'offered', \
     '' using 1:5 with lines lw 2 title 'completed', \
     '' using 1:($6 / 5) with lines dt 2 title 'lifecycle events / 5'

set ylabel 'count'
plot csv using 1:7 with lines lw 2 title 'sagas in flight', \
     '' using 1:9 with lines title 'command msgs waiting', \
     '' using 1:10 with lines title 'reply msgs waiting', \
     '' using 1:8 with lines dt 2 title 'starts unanswered', \
     '' using 1:21 with lines dt 3 title 'dead saga\_outbox rows'

set ylabel 'ms'
set logscale y
plot csv using 1:12 with lines lw 2 title 'start ack p95', \
     '' using 1:13 with lines title 'start ack p99', \
     '' using 1:14 with lines lw 2 title 'completion p95', \
     '' using 1:15 with lines lw 2 title 'message age p95'
unset logscale y

set ylabel 'cores / MB'
set y2label 'MB'
set y2tics
set ytics nomirror
plot csv using 1:18 with lines lw 2 title 'sagad CPU (cores)', \
     '' using 1:19 axes x1y2 with lines title 'sagad RSS (MB, right)'
unset multiplot
