using OnnxAlign.Core;
using OnnxAlign.IO;

namespace OnnxAlign.Estimation;

/// <summary>
/// report.json's <c>statistics</c> of a run's samples: per-coordinate mean and covariance for low-dimensional samples
/// (<see cref="SampleMoments"/>), overall value statistics otherwise (<see cref="SampleValueStatistics"/>); serialised by
/// <see cref="ReportJson"/> with the fields of its run-time type (also where a record declares the base type). The in-memory and the streamed-from-file forms give
/// the same values, bit for bit, so that a merged run reports what the single run does.
/// </summary>
[System.Text.Json.Serialization.JsonDerivedType(typeof(SampleMoments))]
[System.Text.Json.Serialization.JsonDerivedType(typeof(SampleValueStatistics))]
public abstract record SampleStatistics
{
    /// <summary>Largest dimension for which full per-coordinate moments are reported.</summary>
    public const int MomentDimensionLimit = 16;

    /// <summary>The statistics of <paramref name="samples"/> (rows of <paramref name="sampleSize"/> values).</summary>
    public static SampleStatistics Of(float[] samples, int sampleSize) => Of(() => [samples], sampleSize);

    /// <summary>
    /// <see cref="Of(float[], int)"/> of the samples in a .npy file, read a chunk at a time in two passes (a merged run of
    /// N samples needs memory for one chunk, not for N): the same values, bit for bit, as of the whole array.
    /// </summary>
    public static SampleStatistics OfFile(string npyPath, int sampleSize) =>
        Of(() => NpyFile.ReadRows(npyPath, Math.Max(1, (1 << 22) / Math.Max(sampleSize, 1))).Select(chunk => chunk.Data), sampleSize);

    /// <summary>A figure to 6 decimals (report.json's precision for moments and times).</summary>
    public static double Round(double v) => double.IsFinite(v) ? Math.Round(v, 6) : v;

    /// <summary>The statistics over one or more passes of row chunks in order (<paramref name="pass"/> starts a pass).</summary>
    private static SampleStatistics Of(Func<IEnumerable<float[]>> pass, int sampleSize)
    {
        long rows = 0;
        if (sampleSize <= MomentDimensionLimit)
        {
            // Numerics' column arithmetic, row after row across chunks: ColumnMeans and ColumnCovariance of the whole.
            var mean = new double[sampleSize];
            foreach (var chunk in pass()) { Numerics.AddColumns(chunk, sampleSize, mean); rows += chunk.Length / sampleSize; }
            for (int c = 0; c < sampleSize; c++) mean[c] /= rows;
            var cov = new double[sampleSize * sampleSize];
            foreach (var chunk in pass()) Numerics.AddCenteredProducts(chunk, sampleSize, mean, cov);
            for (int k = 0; k < cov.Length; k++) cov[k] /= rows - 1;
            return new SampleMoments(mean.Select(Round).ToArray(), cov.Select(Round).ToArray());
        }
        double sum = 0, sumSq = 0;
        long values = 0;
        foreach (var chunk in pass())
        {
            foreach (float v in chunk) { sum += v; sumSq += (double)v * v; }
            values += chunk.Length;
        }
        double valueMean = sum / values;
        return new SampleValueStatistics(valueMean, Math.Sqrt(Math.Max(sumSq / values - valueMean * valueMean, 0)));
    }
}

/// <summary>Per-coordinate moments, to 6 decimals.</summary>
/// <param name="Mean">The mean of each coordinate.</param>
/// <param name="Covariance">The covariance (n − 1), row-major.</param>
public sealed record SampleMoments(double[] Mean, double[] Covariance) : SampleStatistics;

/// <summary>Statistics of all values of high-dimensional samples.</summary>
/// <param name="ValueMean">The mean value.</param>
/// <param name="ValueStd">The values' standard deviation.</param>
public sealed record SampleValueStatistics(double ValueMean, double ValueStd) : SampleStatistics;
