namespace OnnxAlign;

/// <summary>Small numerical helpers shared across the library.</summary>
public static class Numerics
{
    /// <summary>log Σ exp(v), overflow-safe (shifted by the maximum).</summary>
    public static double LogSumExp(ReadOnlySpan<double> values)
    {
        double max = double.NegativeInfinity;
        foreach (double v in values) max = Math.Max(max, v);
        if (double.IsNegativeInfinity(max)) return max;
        double sum = 0;
        foreach (double v in values) sum += Math.Exp(v - max);
        return max + Math.Log(sum);
    }

    /// <summary>exp(v − logΣexp v), overflow-safe.</summary>
    public static double[] Softmax(ReadOnlySpan<double> values)
    {
        double lse = LogSumExp(values);
        var result = new double[values.Length];
        for (int i = 0; i < values.Length; i++) result[i] = Math.Exp(values[i] - lse);
        return result;
    }

    /// <summary>Column means of a row-major [rows, cols] float matrix, in double.</summary>
    public static double[] ColumnMeans(ReadOnlySpan<float> data, int cols)
    {
        int rows = data.Length / cols;
        var mean = new double[cols];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) mean[c] += data[r * cols + c];
        for (int c = 0; c < cols; c++) mean[c] /= rows;
        return mean;
    }

    /// <summary>Per-column sample variance (divisor rows − 1): the diagonal of <see cref="ColumnCovariance"/> in O(rows·cols).</summary>
    public static double[] ColumnVariances(ReadOnlySpan<float> data, int cols)
    {
        int rows = data.Length / cols;
        var mean = ColumnMeans(data, cols);
        var variance = new double[cols];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++) { double d = data[r * cols + c] - mean[c]; variance[c] += d * d; }
        for (int c = 0; c < cols; c++) variance[c] /= rows - 1;
        return variance;
    }

    /// <summary>Sample covariance (divisor rows − 1) of a row-major [rows, cols] float matrix, row-major cols × cols.</summary>
    public static double[] ColumnCovariance(ReadOnlySpan<float> data, int cols)
    {
        int rows = data.Length / cols;
        var mean = ColumnMeans(data, cols);
        var cov = new double[cols * cols];
        for (int r = 0; r < rows; r++)
            for (int i = 0; i < cols; i++)
            {
                double di = data[r * cols + i] - mean[i];
                for (int j = 0; j < cols; j++) cov[i * cols + j] += di * (data[r * cols + j] - mean[j]);
            }
        for (int k = 0; k < cov.Length; k++) cov[k] /= rows - 1;
        return cov;
    }

    /// <summary>Solves S·u = b in place (u overwrites b) for a small symmetric positive definite S (row-major k × k) by
    /// Cholesky; returns false when S is not numerically positive definite.</summary>
    public static bool SolveSymmetricPositive(ReadOnlySpan<double> s, Span<double> b)
    {
        int k = b.Length;
        Span<double> l = k <= 16 ? stackalloc double[k * k] : new double[k * k];
        for (int i = 0; i < k; i++)
            for (int j = 0; j <= i; j++)
            {
                double sum = s[i * k + j];
                for (int m = 0; m < j; m++) sum -= l[i * k + m] * l[j * k + m];
                if (i == j)
                {
                    if (!(sum > 0)) return false;
                    l[i * k + i] = Math.Sqrt(sum);
                }
                else l[i * k + j] = sum / l[j * k + j];
            }
        for (int i = 0; i < k; i++)
        {
            double sum = b[i];
            for (int m = 0; m < i; m++) sum -= l[i * k + m] * b[m];
            b[i] = sum / l[i * k + i];
        }
        for (int i = k - 1; i >= 0; i--)
        {
            double sum = b[i];
            for (int m = i + 1; m < k; m++) sum -= l[m * k + i] * b[m];
            b[i] = sum / l[i * k + i];
        }
        return true;
    }

    /// <summary>The largest eigenvalue of a symmetric matrix (row-major k × k), rounded up by a relative 1e-9 so that
    /// it can serve in a priori bounds.</summary>
    public static double LargestEigenvalue(ReadOnlySpan<double> s, int k)
    {
        var values = s[..(k * k)].ToArray();
        var matrix = MathNet.Numerics.LinearAlgebra.Matrix<double>.Build.Dense(k, k, (i, j) => values[i * k + j]);
        double largest = matrix.Evd(MathNet.Numerics.LinearAlgebra.Symmetricity.Symmetric).EigenValues.Max(e => e.Real);
        return largest * (1 + 1e-9) + 1e-300;
    }
}
